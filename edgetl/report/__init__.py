"""Reports: JSON is the source of truth; Markdown and PNG plots are rendered from it."""
