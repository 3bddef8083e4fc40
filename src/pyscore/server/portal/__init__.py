"""The File Repository: pages to find files and export their manifest."""
