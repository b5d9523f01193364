"""Convert a Sana workflow built for the ExtraModels nodes (NVlabs/Sana asset/docs/ComfyUI/*.json, ExtraModels
examples) into one that uses this package's nodes.

Usage: ``python scripts/convert_workflow.py IN.json OUT.json``. Reads a UI-format workflow, writes the converted one
and prints what it changed and what it could not map. The mappings are in ``compat/extramodels.py``.
"""

import argparse
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    """Command-line entry point; returns the exit status (0 = converted, 1 = unreadable input)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="UI-format workflow using ExtraModels Sana nodes")
    parser.add_argument("target", type=Path, help="where to write the converted workflow")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT))
    from compat.workflow_convert import convert_workflow

    try:
        workflow = json.loads(args.source.read_text(encoding="utf-8"))
        converted, changed, unmapped = convert_workflow(workflow)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        print(f"convert_workflow: cannot convert {args.source}: {type(e).__name__}: {e}. Expected a UI-format "
              "workflow (the .json the ComfyUI frontend saves, with 'nodes' and 'links').", file=sys.stderr)
        return 1
    args.target.write_text(json.dumps(converted, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.target}")
    for line in changed:
        print(f"changed: {line}")
    for line in unmapped:
        print(f"NOT MAPPED: {line}")
    if not changed:
        print("nothing to convert: the workflow has no ExtraModels Sana nodes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
