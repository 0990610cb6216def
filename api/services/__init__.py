"""Work behind the routers that is more than one query, one module per concern."""
