"""provisiond's DHCP server: pure packet and policy code, and a thin socket server around it."""
