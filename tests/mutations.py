"""On-demand mutation check: removing a low-precision guard in a temporary copy of the repository must fail a test.

Run from the repository root with the test environment's Python (pytest never collects it: the name does not match
pytest's ``test_*.py`` pattern):

    python tests/mutations.py            # every mutation
    python tests/mutations.py a c        # some of them
    python tests/mutations.py --patterns-only   # only check that each pattern still matches the source

For each mutation the script copies the repository (without .git) to a temporary folder, runs the catching tests there
once unmodified and once with the one-line change applied, and prints the figure each test prints (``max |a - b|``
from tests/assertions.py) with and without the change. Exit status 0 only when every unmodified run passes and every
mutated run fails. A pattern that no longer matches the source (the code was restructured) is reported as an error
naming the file and the pattern, so the mutation can be rewritten rather than silently skipped.
"""

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The figure line printed by tests/assertions.py (and repeated in the assertion message).
FIGURE = re.compile(r"^(?:E\s+)?(?:AssertionError: )?([^\n=]*: (?:max \|a - b\| = |relative L2 error |relative MSE )"
                    r"[0-9].*)$", re.MULTILINE)
FAILURE = re.compile(r"^E\s+AssertionError: (.*)$", re.MULTILINE)


@dataclass(frozen=True)
class Mutation:
    """One source edit: `pattern` (a regex that must match exactly `count` times) replaced by `replacement`."""

    key: str
    what: str
    path: str
    pattern: str
    replacement: str
    tests: tuple[str, ...]
    count: int = 1

    def apply(self, root: Path) -> None:
        """Edit the copy under `root`; raises RuntimeError naming the file when the pattern does not match."""
        file = root / self.path
        source = file.read_text()
        mutated, found = re.subn(self.pattern, self.replacement, source)
        if found != self.count:
            raise RuntimeError(f"mutation {self.key}: pattern {self.pattern!r} matched {found} times in {self.path} "
                               f"(expected {self.count}); the code was restructured, update tests/mutations.py")
        file.write_text(mutated)


LOW = "tests/test_low_precision.py"
MUTATIONS = (
    Mutation("a", "DiT linear attention without the fp32 upcast of q/k/v", "models/dit_blocks.py",
             r"(linear_attention\(\s*F\.relu\(q\))\.float\(\)(,\s*F\.relu\(k\))\.float\(\)(,\s*v)\.float\(\)",
             r"\1\2\3", (f"{LOW}::test_self_attention_fp16_4096_tokens",)),
    Mutation("b", "Sprint ('vanilla') cross-attention without the fp32 softmax", "models/dit_blocks.py",
             r"if self\.fp32_softmax:", "if False:", (f"{LOW}::test_vanilla_cross_attention_low_precision",)),
    Mutation("c", "DC-AE RMSNorm2d statistics in the input dtype", "models/dcae_blocks.py",
             r"(vector_norm\([^)]*?),\s*dtype=torch\.float32", r"\1",
             ("tests/test_low_precision_dcae.py::test_decode_low_precision_matches_fp32",
              "tests/test_low_precision_dcae.py::test_rms_norm2d_statistics_in_float32")),
    Mutation("d", "analytic latent->RGB factors with the ReLU slope inverted", "models/dcae_preview.py",
             r"relu_slope = gauss_cdf\b", "relu_slope = 1 - gauss_cdf",
             ("tests/test_low_precision_dcae.py::test_analytic_preview_factors_are_the_best_linear_fit_of_the_head",)),
)


def _copy_repo(destination: Path) -> Path:
    target = destination / ROOT.name
    shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(".git", "__pycache__", ".pytest_cache", ".ruff_cache"))
    return target


def _run_tests(root: Path, tests: tuple[str, ...]) -> tuple[bool, list[str]]:
    """Run `tests` in `root`; (passed, the figures they printed)."""
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", *tests]
    out = subprocess.run(command, cwd=root, capture_output=True, text=True)
    text = out.stdout + out.stderr
    if out.returncode not in (0, 1):
        print(text[-3000:])
    figures = FIGURE.findall(text) + [f"failure: {m}" for m in FAILURE.findall(text) if not FIGURE.match(m)]
    # pytest's progress marks ("." or "F") precede the next printed line
    return out.returncode == 0, list(dict.fromkeys(re.sub(r"^(?:\.|F(?=[A-Z]))+", "", m.strip()) for m in figures))


def check(mutation: Mutation) -> bool:
    """Run the catching tests without and with `mutation`; True when they pass, then fail."""
    print(f"\n[{mutation.key}] {mutation.what} ({mutation.path})")
    with tempfile.TemporaryDirectory(prefix=f"sana-mutation-{mutation.key}-") as tmp:
        root = _copy_repo(Path(tmp))
        clean_ok, clean = _run_tests(root, mutation.tests)
        mutation.apply(root)
        mutated_ok, mutated = _run_tests(root, mutation.tests)
    for label, figures in (("without", clean), ("with", mutated)):
        for figure in figures:
            print(f"  {label} mutation: {figure}")
    verdict = clean_ok and not mutated_ok
    print(f"  tests {'pass' if clean_ok else 'FAIL'} unmodified, {'pass' if mutated_ok else 'fail'} mutated: "
          f"{'caught' if verdict else 'NOT CAUGHT'}")
    return verdict


def main() -> int:
    """Apply the chosen mutations one at a time; exit 1 if any is not caught or its pattern is gone."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("keys", nargs="*", help="mutation keys (default: all): " + ", ".join(m.key for m in MUTATIONS))
    parser.add_argument("--patterns-only", action="store_true", help="only check that every pattern still matches")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.keys or m.key in args.keys]
    results = []
    for mutation in chosen:
        try:
            if args.patterns_only:
                source = (ROOT / mutation.path).read_text()
                found = len(re.findall(mutation.pattern, source))
                print(f"[{mutation.key}] {mutation.path}: pattern matches {found} time(s), expected {mutation.count}")
                results.append(found == mutation.count)
                continue
            results.append(check(mutation))
        except RuntimeError as e:
            print(f"  ERROR: {e}")
            results.append(False)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
