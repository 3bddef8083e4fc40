"""score-client: the researcher's side: download, view, mount, upload."""
