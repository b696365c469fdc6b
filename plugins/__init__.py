"""Built-in genforge plugins, one package per industry (`genforge.plugins.<industry>`)."""
