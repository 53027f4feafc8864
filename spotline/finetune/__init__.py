"""Feedback-triggered fine-tuning: plain Python, no Prefect."""
