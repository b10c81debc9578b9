"""Edge agent for line PCs: follows routing for its line and rollout wave, pulls and verifies the
model artifact from the registry, runs it locally with onnxruntime, buffers inspections in an
on-disk outbox while the bus is unreachable, and sends heartbeats (``agent``, ``models``,
``outbox``)."""
