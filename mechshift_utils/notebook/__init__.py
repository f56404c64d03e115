"""What the notebooks run on: their common parameters, the pair and run folder every notebook
starts from, figures (PNG + PDF + CSV), and the headless runner behind run_all.sh."""
