"""Stage 7, serve: predictions for image files and the browser demo."""
