"""textq: sentiment and summarization as durable asynchronous jobs."""
