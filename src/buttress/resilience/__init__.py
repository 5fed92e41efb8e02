"""The rules every stage follows: error categories, circuit breakers, durations, deadlines."""
