"""hybridrec model server: PyTorch recommenders behind a dynamically batched HTTP API."""
