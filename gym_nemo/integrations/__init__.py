"""Adapters to the outside world: NeMo Gym data, trainers (TRL, OpenRLHF, verl)."""
