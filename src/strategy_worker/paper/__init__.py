"""Paper trading on embedded defaults: one command, nothing to install or start by hand."""
