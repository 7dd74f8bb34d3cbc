"""The task registry: task metadata in Redis (records, categories), behind one small key schema."""
