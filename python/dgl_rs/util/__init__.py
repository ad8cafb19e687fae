"""The bottom layer: errors, atomic file writes and safe reads, progress bars. Imports
nothing else of dgl_rs."""
