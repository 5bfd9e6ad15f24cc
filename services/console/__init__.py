"""The operator console: a web UI served at ``/`` (static files) with a small sign-in/session API."""
