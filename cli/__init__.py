"""Commands of the one executable besides serving: what a person runs in a terminal."""
