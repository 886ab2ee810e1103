"""The models' library, by job: `training/`, `folders/` (model folders and cards), `evaluation/`,
`generation/`, `registry/` and `reports/`; `config.py` holds the settings and `records.py` what
the stages hand each other. Plain Python: no Prefect imports."""
