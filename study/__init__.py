"""Study configs for scripts/study.py (plain Python: `python scripts/study.py --config study/nli_smollm2.py`).

A config that builds on others imports what it shares by name: `from study.nli_arms import label_only`
(study/nli_arms.py holds the NLI arms every NLI study picks from). scripts/study.py imports this package
before it runs a config, also when the config lies elsewhere, so such an import works from any config.
"""
