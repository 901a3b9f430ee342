"""One module per resource server: tasks, tools and the verifier call."""
