"""score-server: Song-compatible metadata, Score-compatible storage, htsget and DRS in one app."""
