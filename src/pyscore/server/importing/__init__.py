"""`score-server import`: a running SONG + Score platform moved onto pyscore, ids kept.

- records: SONG's records as either source reads them (the shapes of SONG's JSON)
- song_db, song_http: the two sources (SONG's PostgreSQL, read-only; SONG's open HTTP API)
- song: writing them into pyscore (checked against pyscore's limits, compared with what is
  there, so a second run changes nothing and a later one imports only the delta)
- score: adopting the objects of Score's bucket(s) in place, from `.meta` or HEAD
- verify: every imported record and object against its source
- cli: the `import` commands; parsing and printing only
"""
