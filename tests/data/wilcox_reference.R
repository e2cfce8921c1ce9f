# Reference p-values for tests/test_stats.py, produced with R's own wilcox.test and p.adjust.
# Regenerate:  Rscript tests/data/wilcox_reference.R > tests/data/wilcox_reference.csv
# (R 4.2.2 from Debian bookworm's r-base-core was used for the committed file.)
set.seed(20261124)
cases <- list(
  list(name = "paired_exact_n12", paired = TRUE,
       x = round(rnorm(12, 1, 1), 6), y = round(rnorm(12, 0.4, 1), 6)),
  list(name = "paired_ties_n20", paired = TRUE,
       x = round(rnorm(20, 1, 1), 0), y = round(rnorm(20, 0.5, 1), 0) + 0.5),
  list(name = "paired_zeros_ties_n30", paired = TRUE,
       x = c(1, 2, 3, 3, 5, 2, 7, 8, 1, 0, round(rnorm(20), 1)),
       y = c(1, 2, 3, 1, 2, 4, 1, 9, 4, 2, round(rnorm(20), 1))),
  list(name = "paired_zeros_no_ties_n15", paired = TRUE,
       x = c(0.5, 1.5, round(rnorm(13), 6)), y = c(0.5, 1.5, round(rnorm(13), 6))),
  list(name = "paired_approx_n80", paired = TRUE,
       x = round(rexp(80, 1), 6), y = round(rexp(80, 1.3), 6)),
  list(name = "unpaired_exact_9_14", paired = FALSE,
       x = round(rnorm(9, 0.8), 6), y = round(rnorm(14), 6)),
  list(name = "unpaired_exact_49_3", paired = FALSE,
       x = round(rnorm(49), 6), y = round(rnorm(3, 1), 6)),
  list(name = "unpaired_ties_12_15", paired = FALSE,
       x = round(rnorm(12, 0.5), 0), y = round(rnorm(15), 0)),
  list(name = "unpaired_approx_60_75", paired = FALSE,
       x = round(rgamma(60, 2), 6), y = round(rgamma(75, 2.4), 6)),
  list(name = "unpaired_approx_ties_200_150", paired = FALSE,
       x = round(rnorm(200), 1), y = round(rnorm(150, 0.1), 1)),
  # Issue 8: exact tails summed directly (no 1 - lower cancellation), sizes at the
  # exact/normal boundary, zeros, ties, all tied and tiny p-values.
  list(name = "unpaired_separated_30_30", paired = FALSE, x = 31:60, y = 1:30),
  list(name = "unpaired_separated_30_30_less", paired = FALSE, x = 1:30, y = 31:60),
  list(name = "unpaired_exact_20_24", paired = FALSE,
       x = round(rnorm(20, 1.2), 6), y = round(rnorm(24), 6)),
  list(name = "unpaired_exact_49_49", paired = FALSE,
       x = round(rnorm(49, 0.9), 6), y = round(rnorm(49), 6)),
  list(name = "unpaired_exact_49_49_separated", paired = FALSE,
       x = round(runif(49, 10, 11), 6), y = round(runif(49, 0, 1), 6)),
  list(name = "unpaired_exact_3_3", paired = FALSE, x = c(4.5, 6.25, 5), y = c(1, 2, 3)),
  list(name = "unpaired_approx_49_50", paired = FALSE,
       x = round(rnorm(49, 0.4), 6), y = round(rnorm(50), 6)),
  list(name = "unpaired_approx_50_50", paired = FALSE,
       x = round(rnorm(50, 0.4), 6), y = round(rnorm(50), 6)),
  list(name = "unpaired_approx_separated_300_300", paired = FALSE,
       x = round(runif(300, 10, 11), 6), y = round(runif(300, 0, 1), 6)),
  list(name = "unpaired_ties_separated_40_45", paired = FALSE,
       x = round(runif(40, 10, 11), 1), y = round(runif(45, 0, 1), 1)),
  list(name = "unpaired_all_tied_4_3", paired = FALSE, x = c(2, 2, 2, 2), y = c(2, 2, 2)),
  list(name = "paired_exact_n49", paired = TRUE,
       x = round(rnorm(49, 0.3), 6), y = round(rnorm(49), 6)),
  list(name = "paired_exact_n49_all_positive", paired = TRUE,
       x = round(runif(49, 10, 11), 6), y = round(runif(49, 0, 1), 6)),
  list(name = "paired_exact_n30_all_negative", paired = TRUE,
       x = round(runif(30, 0, 1), 6), y = round(runif(30, 10, 11), 6)),
  list(name = "paired_exact_n20_near", paired = TRUE,
       x = round(rnorm(20, 1.5), 6), y = round(rnorm(20), 6)),
  list(name = "paired_approx_n50", paired = TRUE,
       x = round(rnorm(50, 0.3), 6), y = round(rnorm(50), 6)),
  list(name = "paired_approx_separated_n400", paired = TRUE,
       x = round(runif(400, 10, 11), 6), y = round(runif(400, 0, 1), 6)),
  list(name = "paired_zeros_n49", paired = TRUE,
       x = c(rep(1, 5), round(rnorm(44, 0.5), 6)), y = c(rep(1, 5), round(rnorm(44), 6))),
  list(name = "paired_ties_n12", paired = TRUE,
       x = c(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12), y = c(0, 1, 2, 3, 3, 4, 5, 9, 8, 8, 9, 9))
)
# exact: whether wilcox.test (exact = NULL) takes its exact branch here, by its own rule.
exact_rule <- function(cs) {
  if (cs$paired) {
    d <- cs$x - cs$y
    nz <- d[d != 0]
    length(nz) < 50 && !any(d == 0) && length(unique(abs(nz))) == length(nz)
  } else {
    r <- c(cs$x, cs$y)
    length(cs$x) < 50 && length(cs$y) < 50 && length(unique(r)) == length(r)
  }
}
cat("case,paired,x,y,p_greater,p_less,p_two_sided,statistic,exact\n")
for (cs in cases) {
  p <- sapply(c("greater", "less", "two.sided"), function(a)
    suppressWarnings(wilcox.test(cs$x, cs$y, paired = cs$paired, alternative = a)$p.value))
  s <- suppressWarnings(wilcox.test(cs$x, cs$y, paired = cs$paired)$statistic)
  cat(sprintf("%s,%s,%s,%s,%.17g,%.17g,%.17g,%.17g,%s\n", cs$name, cs$paired,
              paste(format(cs$x, digits = 17), collapse = ";"),
              paste(format(cs$y, digits = 17), collapse = ";"), p[1], p[2], p[3], s,
              exact_rule(cs)))
}
bh <- c(0.01, 0.04, NA, 0.03, 0.2, 0.04, 0.5, 0.001, 0.9)
cat(sprintf("bh,NA,%s,,%s,,,,\n", paste(bh, collapse = ";"),
            paste(format(p.adjust(bh, "BH"), digits = 17), collapse = ";")))
