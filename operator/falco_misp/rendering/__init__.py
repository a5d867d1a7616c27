"""Stage 3, indicators to Falco rules files (pure): self-contained shards within the byte and item bounds
(:mod:`.shards`, templates in the top-level ``rules/`` folder) and the summary the CLI prints (:mod:`.summary`)."""
