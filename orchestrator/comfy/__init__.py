"""ComfyUI: workflows, client, server container."""
