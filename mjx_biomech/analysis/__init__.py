"""What a fit is judged by: metrics, results (data only) and plots."""
