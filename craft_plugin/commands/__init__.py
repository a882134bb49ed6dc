"""One module per ``craft-plugin`` verb."""
