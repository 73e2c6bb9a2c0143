"""Checkpoints: a run's state, compressed, encrypted, kept in blob storage; retention; restore.

- ``codec``: names and ids, the header, sealing and opening one checkpoint (pure);
- ``checkpointer``: ``Checkpointer`` writes, lists, prunes and restores a run's checkpoints;
- ``writer``: ``CheckpointWriter`` writes them in the background for the orchestrator.
"""
