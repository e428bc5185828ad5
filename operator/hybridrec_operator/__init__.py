"""hybridrec operator: places recommendation models on GPU pools by data sensitivity and price."""
