"""Test helpers that ship with the package: a tiny random-init model and tokenizer built in seconds, offline."""
