"""logbench: a pytest plugin that measures why Kafka is fast (page cache, sendfile, appends)."""
