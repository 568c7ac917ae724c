"""Batch generation: job files, an append-only manifest, a multi-server scheduler, contact sheets.

    from orchestrator.batch.jobs import load_job_file          # YAML -> validated, expanded Jobs
    from orchestrator.batch.run import run_batch               # resume + schedule + sheets + summary
    from orchestrator.batch.comfy_server import connect_servers  # ComfyClient adapters for the scheduler

Modules: `jobs` (format, validation, expansion), `manifest` (JSON-lines state machine),
`scheduler` (depth-K fan-out over servers, faults, Ctrl+C), `prompts` (Job -> API prompt),
`outputs` (images + sidecars), `sheets` (contact sheets, index.html), `run` (the use case).
"""
