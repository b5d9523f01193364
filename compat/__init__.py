"""Compatibility with Sana workflows built for other node packs (pure Python: no ComfyUI, no torch).

``extramodels``: the ExtraModels / NVlabs Sana node ids and how each maps onto this package's nodes;
``workflow_convert``: rewrites a UI-format workflow with those mappings (used by ``scripts/convert_workflow.py``).
"""
