"""Social dilemmas as data, the round engine and the game record."""
