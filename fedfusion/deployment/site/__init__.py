"""The site daemon: a SuperNode dialing out, a launcher that runs only approved apps, connectivity checks."""
