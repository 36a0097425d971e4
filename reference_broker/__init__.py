"""A small, readable Kafka-compatible broker whose fetch path is os.sendfile from the page cache."""
