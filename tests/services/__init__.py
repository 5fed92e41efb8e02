"""Small services the server tests run in real ``buttress serve`` processes."""
