"""Layer 5, write: compare rendered files with the tree, show the diff, write all or nothing."""
