"""Pure renderers: step records in, HTML strings or plotly figures out. Nothing here touches a model."""
