"""What every hera-guard service shares and no single service owns: the service kit (health,
metrics endpoint, signals, settings errors), JSON logs and the one redactor, the times users
type, a stream's identity, and the one-line message of an exception.

It imports nothing of capture/, consumers/, replay/ or guard/: they all import it.
"""
