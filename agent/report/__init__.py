"""Reports: the run and batch HTML pages, their plots, terminal tables, and exports."""
