"""One module per part of Plinth, each exporting ``section`` (a ``plinth.ui.sections.Section``)."""
