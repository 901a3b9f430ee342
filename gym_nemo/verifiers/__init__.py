"""Pure verifiers: (task fields, response) -> Verdict."""
