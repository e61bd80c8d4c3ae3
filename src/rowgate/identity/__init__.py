"""Who is connecting: principals and how they prove it."""
