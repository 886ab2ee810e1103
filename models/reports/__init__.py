"""Reports a person reads: the family report and the dial's measurements."""
