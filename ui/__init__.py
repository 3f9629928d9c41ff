"""The peerfarm desktop app (the Qt face). Nothing here imports Qt at package import,
so `peerfarm` can read the app's options without PySide6 installed."""
