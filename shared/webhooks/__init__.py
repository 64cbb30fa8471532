"""Webhooks: event rows written with job changes, their signatures, the targets allowed."""
