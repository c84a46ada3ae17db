"""Exam guidance: protocols of required views, a live checklist, best-frame capture with heatmaps,
exam.json, an operator control endpoint and the exam report (docs/exam.md)."""
