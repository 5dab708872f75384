"""Layer 3, render: specs into Kubernetes manifests in memory (the renderer and every template context).

Nothing here reads the rendered tree or writes a file.
"""
