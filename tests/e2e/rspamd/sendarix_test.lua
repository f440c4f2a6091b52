-- A symbol whose weight the message chooses, so tests can ask the scanner
-- for an exact score: "X-Test-Score: 10" in the header gives SENDARIX_TEST_SCORE
-- with weight 10 (the symbol's score is 1). Without the header it does not fire.
rspamd_config:register_symbol({
  name = 'SENDARIX_TEST_SCORE',
  score = 1.0,
  description = 'score asked for by the test message',
  callback = function(task)
    local h = task:get_header('X-Test-Score')
    if not h then
      return false
    end
    local v = tonumber(h)
    if not v then
      return false
    end
    return true, v
  end,
})
