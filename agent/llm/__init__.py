"""The LLM side: endpoint settings, the retried client, the reply cache, pulling code out of replies, and a
scripted endpoint for tests."""
