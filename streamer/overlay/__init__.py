"""Overlay subscriber: renders results onto the scanner image (window, MP4, web page)."""
