"""Service files the benches serve (``buttress serve bench/services/<file>.py:<attr>``)."""
