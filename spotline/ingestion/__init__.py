"""Ingestion as plain Python: what a request may ask (requests), how bytes become text (parsing),
text becomes chunks (chunking), and how a sync plans and writes (pipeline). No Prefect here:
tasks/ingest.py wraps these steps, flows/ingest.py tells the story.
"""
